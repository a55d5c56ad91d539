//! keyserver.md §4.1–4.2 and §6.3: the server's UID rules and the client's
//! replay of them over a history, tried as a user and as an attacker
//! (including a server that signs what it forged).

use ed25519_dalek::SigningKey;
use ks_core::author::{self, Authority, UidKeys};
use ks_core::b64;
use ks_core::entry::{Entry, GENESIS_PREV};
use ks_core::error::RpcError;
use ks_core::lcj::Lcj;
use ks_core::rules::{self, IdentityState, Kind, Lifetime, Policy, ROLLOVER};
use ks_core::sig::{sign, Ctx};
use ks_core::uid::{self, KeyEntry, ReplyEntry, UidMessage, UidMessageReply};
use ks_core::verify::{verify_chain, Failure, Match};

const NOW: u64 = 1_800_000_000;
const ALICE: &str = "alice@example.org";

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

fn x25519(b: u8) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([b; 32])).to_bytes()
}

fn policy() -> Policy {
    Policy::for_domains(vec!["example.org".into()])
}

fn create(
    sig: &SigningKey,
    escrow: Option<&SigningKey>,
    last: Option<&Entry>,
    now: u64,
) -> UidMessage {
    let keys = UidKeys {
        sig_key: sig,
        escrow,
        static_key: x25519(9),
    };
    author::sign_create(author::content(ALICE, &keys, 0, last, "strict", now), &keys)
}

fn update(
    prev: &UidMessage,
    new_sig: &SigningKey,
    escrow: Option<&SigningKey>,
    by: Authority<'_>,
    last: Option<&Entry>,
    now: u64,
) -> UidMessage {
    let keys = UidKeys {
        sig_key: new_sig,
        escrow,
        static_key: x25519(10),
    };
    let c = author::content(
        ALICE,
        &keys,
        prev.content.msg_count + 1,
        last,
        "strict",
        now,
    );
    author::sign_update(c, new_sig, by)
}

fn state(m: &UidMessage, pos: u64) -> IdentityState {
    IdentityState::of(m, pos, [0; 32])
}

#[test]
fn an_honest_creation_passes_and_each_flaw_gets_its_code() {
    let genesis = Entry::build(
        "keyserver@example.org",
        &[1; 32],
        &[0; 8],
        &[0; 16],
        &GENESIS_PREV,
    );
    let sig = key(1);
    let escrow = key(2);
    let ok = create(&sig, Some(&escrow), Some(&genesis), NOW);
    rules::check_stateless(Kind::Create, &ok, NOW, &policy(), false).expect("valid");
    rules::check_create(None, &ok, NOW).expect("unknown identity");
    // Without escrow both extra signatures must be empty.
    let plain = create(&sig, None, Some(&genesis), NOW);
    rules::check_stateless(Kind::Create, &plain, NOW, &policy(), false).expect("valid");

    let code = |m: &UidMessage| {
        rules::check_stateless(Kind::Create, m, NOW, &policy(), false)
            .expect_err("refused")
            .code()
    };
    let mut m = ok.clone();
    m.escrow_signature = String::new();
    assert_eq!(code(&m), -32013, "no proof of escrow possession");
    let mut m = ok.clone();
    m.user_signature = m.self_signature.clone();
    assert_eq!(code(&m), -32017, "USERSIGNATURE at creation");
    let mut m = ok.clone();
    m.content.identity = "bob@example.org".into();
    assert_eq!(code(&m), -32013, "content changed after signing");
    let mut m = ok.clone();
    m.content.identity = "alice@elsewhere.org".into();
    m.content.repo_uris = vec!["elsewhere.org".into()];
    assert_eq!(code(&m), -32012, "domain not served");
    let root = UidKeys {
        sig_key: &sig,
        escrow: None,
        static_key: x25519(9),
    };
    let mut c = author::content("root@example.org", &root, 0, Some(&genesis), "strict", NOW);
    c.repo_uris = vec!["example.org".into()];
    assert_eq!(
        code(&author::sign_create(c, &root)),
        -32012,
        "reserved localpart"
    );
    let mut c = author::content("a1ice@example.org", &root, 0, Some(&genesis), "strict", NOW);
    c.repo_uris = vec!["example.org".into()];
    let e = rules::check_stateless(
        Kind::Create,
        &author::sign_create(c, &root),
        NOW,
        &policy(),
        false,
    )
    .expect_err("unmapped");
    assert_eq!(e.code(), -32602);
    for (field, mutate) in [
        (
            "optional",
            Box::new(|c: &mut uid::UidContent| c.preferences.forward_sec = "optional".into())
                as Box<dyn Fn(&mut uid::UidContent)>,
        ),
        (
            "two pubkeys",
            Box::new(|c: &mut uid::UidContent| c.pubkeys.push(c.pubkeys[0].clone())),
        ),
        (
            "escrow = sigkey",
            Box::new(|c: &mut uid::UidContent| c.sig_escrow = c.sig_key.clone()),
        ),
        (
            "bad hash",
            Box::new(|c: &mut uid::UidContent| c.sig_key.hash = c.pubkeys[0].hash.clone()),
        ),
        (
            "mixaddress",
            Box::new(|c: &mut uid::UidContent| c.mix_address = "mix".into()),
        ),
        (
            "chainlink",
            Box::new(|c: &mut uid::UidContent| c.chain_link.uri = "x".into()),
        ),
        (
            "version",
            Box::new(|c: &mut uid::UidContent| c.version = "1.1".into()),
        ),
        (
            "small-order x25519",
            Box::new(|c: &mut uid::UidContent| {
                c.pubkeys = vec![KeyEntry::new(uid::Function::Ecdhe25519, &[0; 32])]
            }),
        ),
        (
            "small-order ed25519",
            Box::new(|c: &mut uid::UidContent| {
                c.sig_key = KeyEntry::new(uid::Function::Ed25519, &[0; 32])
            }),
        ),
    ] {
        let mut c = ok.content.clone();
        mutate(&mut c);
        let keys = UidKeys {
            sig_key: &sig,
            escrow: Some(&escrow),
            static_key: x25519(9),
        };
        assert_eq!(code(&author::sign_create(c, &keys)), -32602, "{field}");
    }
    // Times: expired, more than a year ahead, inverted.
    let mut c = ok.content.clone();
    c.not_after = NOW;
    let keys = UidKeys {
        sig_key: &sig,
        escrow: Some(&escrow),
        static_key: x25519(9),
    };
    assert_eq!(code(&author::sign_create(c, &keys)), -32016);
    let mut c = ok.content.clone();
    c.not_after = NOW + ROLLOVER + 301;
    assert_eq!(code(&author::sign_create(c, &keys)), -32016);
    let mut c = ok.content.clone();
    c.not_before = c.not_after;
    assert_eq!(code(&author::sign_create(c, &keys)), -32016);
    // MSGCOUNT 0 only.
    let mut c = ok.content.clone();
    c.msg_count = 1;
    assert_eq!(code(&author::sign_create(c, &keys)), -32014);
}

#[test]
fn updates_follow_the_signature_and_escrow_rules() {
    let (k1, k2, k3, e1, e2) = (key(1), key(2), key(3), key(11), key(12));
    let first = create(&k1, Some(&e1), None, NOW);
    let prev = state(&first, 1);
    let check = |m: &UidMessage, now: u64| {
        rules::check_stateless(Kind::Update, m, now, &policy(), false)?;
        rules::check_update(Some(&prev), m, now)
    };
    // Ordinary: new SIGKEY, same escrow, signed by the old SIGKEY.
    let ok = update(&first, &k2, Some(&e1), Authority::User(&k1), None, NOW);
    check(&ok, NOW).expect("valid update");
    // Recovery: SIGKEY lost, escrow signs, may rotate the escrow key too.
    let rec = update(&first, &k3, Some(&e2), Authority::Escrow(&e1), None, NOW);
    check(&rec, NOW).expect("escrow recovery");
    // The server (or a thief without keys) signs with a key of its own.
    let forged = update(&first, &k3, Some(&e1), Authority::User(&k3), None, NOW);
    assert_eq!(
        check(&forged, NOW),
        Err(RpcError::BadSignature {
            field: "USERSIGNATURE".into()
        })
    );
    // A thief with SIGKEY cannot change the escrow key.
    let swap = update(&first, &k2, Some(&e2), Authority::User(&k1), None, NOW);
    assert_eq!(check(&swap, NOW).expect_err("escrow swap").code(), -32017);
    // Both signatures, or neither.
    let mut both = ok.clone();
    both.escrow_signature = sign(&e1, Ctx::UidContent, &both.content);
    assert_eq!(check(&both, NOW).expect_err("both").code(), -32017);
    let mut neither = ok.clone();
    neither.user_signature.clear();
    assert_eq!(check(&neither, NOW).expect_err("neither").code(), -32017);
    // MSGCOUNT must be prev + 1.
    let mut c = ok.content.clone();
    c.msg_count = 5;
    let gap = author::sign_update(c, &k2, Authority::User(&k1));
    assert_eq!(check(&gap, NOW), Err(RpcError::BadMsgcount { expected: 1 }));
    // No late escrow: an identity without escrow never gains one.
    let bare = create(&k1, None, None, NOW);
    let late = update(&bare, &k2, Some(&e1), Authority::User(&k1), None, NOW);
    assert_eq!(
        rules::check_update(Some(&state(&bare, 1)), &late, NOW)
            .expect_err("late escrow")
            .code(),
        -32017
    );
    // Lifetime: updatable for a year after NOTAFTER, then quarantined,
    // then reclaimable (and no longer updatable by anyone).
    let later = prev.not_after + ROLLOVER;
    assert_eq!(prev.lifetime(later - 1), Lifetime::Updatable);
    assert_eq!(prev.lifetime(later), Lifetime::Quarantined);
    assert_eq!(prev.lifetime(later + ROLLOVER), Lifetime::Reclaimable);
    assert_eq!(
        rules::check_update(Some(&prev), &ok, later)
            .expect_err("quarantined")
            .code(),
        -32016
    );
    // Create while live or quarantined: taken; a reclaim waits.
    let again = create(&k3, None, None, NOW);
    assert_eq!(
        rules::check_create(Some(&prev), &again, NOW),
        Err(RpcError::IdentityTaken)
    );
    assert_eq!(
        rules::check_create(Some(&prev), &again, later),
        Err(RpcError::IdentityTaken)
    );
    let reclaim_at = later + ROLLOVER;
    let early = create(&k3, None, None, reclaim_at); // NOTBEFORE = reclaim_at − 60
    assert_eq!(
        rules::check_create(Some(&prev), &early, reclaim_at)
            .expect_err("early")
            .code(),
        -32016
    );
    let reclaim = create(&k3, None, None, reclaim_at + 60);
    rules::check_create(Some(&prev), &reclaim, reclaim_at + 60).expect("reclaim");
}

/// A tiny honest server: appends entries and signs replies with `server`.
struct Chain {
    server: SigningKey,
    entries: Vec<Entry>,
    replies: Vec<Option<UidMessageReply>>,
}

impl Chain {
    fn new(server: SigningKey) -> Chain {
        Chain {
            server,
            entries: Vec::new(),
            replies: Vec::new(),
        }
    }

    fn append(&mut self, identity: &str, m: &UidMessage, time: u64) -> usize {
        let pos = self.entries.len();
        let prev = self.entries.last().map_or(GENESIS_PREV, |e| *e.hash());
        let e = Entry::build(identity, &m.uid_hash(), &[pos as u8; 8], &[7; 16], &prev);
        let entry = ReplyEntry {
            hashchain_entry: b64::encode(&e.0),
            hashchain_pos: pos as u64,
            origin: "example.org/kt/v1".into(),
            timestamp: time,
            uid_message_encrypted: uid::seal(m, &[3; 16]),
        };
        let reply = UidMessageReply {
            server_signature: sign(&self.server, Ctx::UidReply, &entry),
            entry,
        };
        self.entries.push(e);
        self.replies.push(Some(reply));
        pos
    }

    fn last(&self) -> Entry {
        *self.entries.last().expect("non-empty")
    }

    fn verify(&self, identity: &str) -> Result<Option<ks_core::verify::Verified>, Failure> {
        let matches: Vec<Match<'_>> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_for(identity))
            .map(|(p, e)| Match {
                pos: p as u64,
                entry: e,
                reply: self.replies[p].as_ref(),
            })
            .collect();
        let vk = self.server.verifying_key();
        verify_chain(
            identity,
            &matches,
            |_| Some(vk),
            |le| self.entries.iter().position(|e| e == le).map(|p| p as u64),
        )
    }
}

fn history() -> (Chain, Vec<UidMessage>) {
    let mut chain = Chain::new(key(99));
    let ks = UidKeys {
        sig_key: &key(98),
        escrow: None,
        static_key: x25519(1),
    };
    let g = author::sign_create(
        author::content("keyserver@example.org", &ks, 0, None, "strict", NOW),
        &ks,
    );
    chain.append("keyserver@example.org", &g, NOW);
    let (k1, k2, k3, e1) = (key(1), key(2), key(3), key(11));
    let a0 = create(&k1, Some(&e1), Some(&chain.last()), NOW);
    chain.append(ALICE, &a0, NOW);
    let a1 = update(
        &a0,
        &k2,
        Some(&e1),
        Authority::User(&k1),
        Some(&chain.last()),
        NOW + 10,
    );
    chain.append(ALICE, &a1, NOW + 10);
    let a2 = update(
        &a1,
        &k3,
        Some(&e1),
        Authority::Escrow(&e1),
        Some(&chain.last()),
        NOW + 20,
    );
    chain.append(ALICE, &a2, NOW + 20);
    (chain, vec![a0, a1, a2])
}

#[test]
fn an_honest_history_verifies_at_every_prefix() {
    let (chain, msgs) = history();
    let v = chain.verify(ALICE).expect("verifies").expect("found");
    assert_eq!(v.message, msgs[2]);
    assert_eq!(v.state.pos, 3);
    assert!(chain.verify("bob@example.org").expect("nothing").is_none());
    for n in 1..=chain.entries.len() {
        let prefix = Chain {
            server: chain.server.clone(),
            entries: chain.entries[..n].to_vec(),
            replies: chain.replies[..n].to_vec(),
        };
        prefix.verify(ALICE).expect("every prefix verifies");
    }
}

#[test]
fn a_takeover_the_server_signs_is_caught_by_anyone_who_scans() {
    let (mut chain, msgs) = history();
    // Self-signed update with a key of the server's.
    let thief = key(66);
    let forged = update(
        &msgs[2],
        &thief,
        Some(&key(11)),
        Authority::User(&thief),
        Some(&chain.last()),
        NOW + 30,
    );
    chain.append(ALICE, &forged, NOW + 30);
    assert!(matches!(
        chain.verify(ALICE),
        Err(Failure::Takeover { pos: 4, .. })
    ));

    // MSGCOUNT-0 re-registration while live.
    let (mut chain, _) = history();
    let rereg = create(&thief, None, Some(&chain.last()), NOW + 30);
    chain.append(ALICE, &rereg, NOW + 30);
    assert!(matches!(
        chain.verify(ALICE),
        Err(Failure::Takeover { pos: 4, .. })
    ));

    // MSGCOUNT gap, properly signed by the owner's old key (a replayed or
    // reordered update).
    let (mut chain, msgs) = history();
    let mut c = msgs[2].content.clone();
    c.msg_count = 7;
    c.last_entry = b64::encode(&chain.last().0);
    let gap = author::sign_update(c, &key(3), Authority::User(&key(3)));
    chain.append(ALICE, &gap, NOW + 30);
    assert!(matches!(
        chain.verify(ALICE),
        Err(Failure::Takeover { pos: 4, .. })
    ));
}

#[test]
fn replies_that_do_not_bind_are_bad_uids_and_unsigned_ones_are_refused() {
    let (chain, msgs) = history();
    // A blob whose plaintext is not the entry's U.
    let mut c = Chain {
        server: chain.server.clone(),
        entries: chain.entries.clone(),
        replies: chain.replies.clone(),
    };
    let mut r = c.replies[2].clone().expect("reply");
    r.entry.uid_message_encrypted = uid::seal(&msgs[0], &[3; 16]);
    r.server_signature = sign(&c.server, Ctx::UidReply, &r.entry);
    c.replies[2] = Some(r);
    assert!(matches!(
        c.verify(ALICE),
        Err(Failure::BadUid { pos: 2, .. })
    ));
    // A reply for the wrong position.
    let mut c = Chain {
        server: chain.server.clone(),
        entries: chain.entries.clone(),
        replies: chain.replies.clone(),
    };
    let mut r = c.replies[2].clone().expect("reply");
    r.entry.hashchain_pos = 3;
    r.server_signature = sign(&c.server, Ctx::UidReply, &r.entry);
    c.replies[2] = Some(r);
    assert!(matches!(
        c.verify(ALICE),
        Err(Failure::BadUid { pos: 2, .. })
    ));
    // Withheld.
    let mut c = Chain {
        server: chain.server.clone(),
        entries: chain.entries.clone(),
        replies: chain.replies.clone(),
    };
    c.replies[3] = None;
    assert_eq!(
        c.verify(ALICE).expect_err("withheld"),
        Failure::Withheld { pos: 3 }
    );
    // Signed by a key the schedule never published.
    let mut c = Chain {
        server: chain.server.clone(),
        entries: chain.entries.clone(),
        replies: chain.replies.clone(),
    };
    let mut r = c.replies[1].clone().expect("reply");
    r.server_signature = sign(&key(5), Ctx::UidReply, &r.entry);
    c.replies[1] = Some(r);
    assert_eq!(
        c.verify(ALICE).expect_err("unsigned"),
        Failure::Unsigned { pos: 1 }
    );
    // A non-canonical plaintext (whitespace) that hashes to a U the
    // server then puts in the entry still fails: open() requires LCJ.
    let spaced = {
        let mut b = msgs[0].to_lcj();
        b.insert(1, b' ');
        b
    };
    assert!(UidMessage::from_lcj(&spaced).is_err());
}
